"""``python -m protoc_gen_connect_python`` runs the protoc plugin."""

from protoc_gen_connect_python.plugin.main import main

if __name__ == "__main__":
    raise SystemExit(main())
