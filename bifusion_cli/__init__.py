"""Thin Typer/Rich front end over bifusion_core."""
