"""Images: safe fetching (this package), decoding, sizing by detail and token accounting."""
