"""The gRPC wire: Google's IAM services as gRPC methods over the same core as REST (``keyless.grpc.server`` builds
the server; ``credentials`` answers ``google.iam.credentials.v1.IAMCredentials``, ``admin`` ``google.iam.admin.v1.IAM``,
``projects`` ``google.cloud.resourcemanager.v3.Projects``; ``calls`` is one call's frame: audit, cache scope, caller;
``errors`` turns the error tree into gRPC statuses)."""
