__version__ = "0.1.0"
# The program's name, as users type it and as its messages on stderr begin.
PROG = "imgdl-watch"
