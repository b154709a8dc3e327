"""Model sources: hub ids, local folders, s3:// folders and built-in tiny models."""
