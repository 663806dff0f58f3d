"""Weight-stream decoders: hardware for the codecs of `terwin.codec`."""
