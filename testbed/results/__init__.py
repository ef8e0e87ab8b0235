"""Run records on disk (``results/<run_id>/``) and the run index and leases in a database."""
