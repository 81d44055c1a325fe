"""Announcements of new files in the ingress area (S3 event notifications through SQS)."""
