"""Nerfstudio-level pieces shared by several methods (see docs/architecture.md)."""
