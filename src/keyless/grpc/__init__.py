"""The gRPC wire: Google's IAM services as gRPC methods over the same core as REST (``keyless.grpc.server`` builds
the server; ``credentials`` answers ``google.iam.credentials.v1.IAMCredentials``; ``errors`` turns the error tree
into gRPC statuses)."""
