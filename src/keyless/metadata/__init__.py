"""The GCE metadata server: the paths Google's clients use to find an attached account and its tokens."""
