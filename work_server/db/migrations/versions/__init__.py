"""One module per schema revision, oldest first (``yadml-server db revision`` adds one)."""
