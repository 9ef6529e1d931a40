"""Speed and cross-check scripts; not part of the ``oodbench`` package."""
