"""Helpers the Streamlit pages share: cached loaders and friendly error display (no page logic lives here)."""
