"""The image explorer (viewer/steer.py): pick an image (?image=ID, search or thumbnails), scale its concepts,
render it beside the original."""

from __future__ import annotations

from viewer.steer import image_explorer_page

image_explorer_page()
