"""Analyses of trained and lesioned networks: segregation index with hierarchical-bootstrap CIs, and figures."""
