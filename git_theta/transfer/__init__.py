"""Moving objects between stores: Git LFS servers and path remotes."""
