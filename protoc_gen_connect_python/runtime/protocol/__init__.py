"""Sans-IO wire rules, one module per protocol: nothing here touches I/O."""
