"""Inference engines behind one small interface (``base.Engine``), chosen by name in ``registry``."""
