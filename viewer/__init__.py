"""The Streamlit viewer: `streamlit run viewer/app.py -- --atlas DIR` (or `atlas view`)."""
