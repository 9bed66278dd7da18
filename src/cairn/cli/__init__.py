"""The ``cairn`` command line: ``serve`` and one module per command group (``keys``,
``tokens``, ``rbac``, ``audit``, ``id-token``), talking to a running cairn over HTTP
(``client``). The top floor: it may import anything."""
