"""Lake storage: the interface (``base``) and its backends (``local``; S3 in AWS)."""
