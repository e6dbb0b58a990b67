"""Portrait avatars: one photo of a real person, its face landmarks (MediaPipe's models run
with LiteRT, offline), and the drawer that animates it."""
