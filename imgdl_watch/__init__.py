"""imgdl-watch: a download daemon for lists of image URLs."""

from .version import __version__

__all__ = ["__version__"]
