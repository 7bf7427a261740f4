"""The protoc/buf plugin that writes ``*_connect.py`` modules.

``main.main`` is the ``protoc-gen-connect-python`` entry point: it reads a
``CodeGeneratorRequest`` on stdin and writes a ``CodeGeneratorResponse`` on stdout.
``model`` turns descriptors into a view model, ``render`` turns that into Python.
"""
