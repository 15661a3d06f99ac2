"""One function per target format."""
