"""The transport: Socket.IO namespaces and HTTP routes over the desk."""
