"""The generation pipeline (docs/architecture.md): ``pipeline.py`` is where every generating request enters."""
