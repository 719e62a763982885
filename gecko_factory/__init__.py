"""gecko-factory: Gecko/FRet training data from plain paragraphs."""
__version__ = "0.1.0"
