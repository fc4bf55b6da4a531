"""Generated stubs of extension.proto (`make api` regenerates them; never edit by hand)."""
