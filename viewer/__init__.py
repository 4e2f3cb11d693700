"""The Streamlit viewer: `streamlit run viewer/server.py -- --atlas DIR` (or `atlas view`)."""
