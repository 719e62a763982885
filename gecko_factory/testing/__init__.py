"""Test and benchmark helpers that ship with the package (like `prefect.testing`)."""
