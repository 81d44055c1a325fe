"""One typed interface per external system (lake storage, catalog, warehouse, serving database),
one sibling module per backend, chosen in one place (``platform.PlatformResource``) from the
environment (``environment``)."""
