"""Contracts (YAML → pandera) and the asset checks built on them."""
