"""The Feast feature repository of the product (see ``definitions.py``)."""
