"""Optional batteries built on the public runtime API.

Each module needs an extra of its own and is imported by name:

- ``extras.otel``: OpenTelemetry spans, metrics and trace propagation
  (``pip install 'protoc-gen-connect-python[otel]'``);
- ``extras.validate``: request and response validation with protovalidate
  (``[validate]``).
"""
