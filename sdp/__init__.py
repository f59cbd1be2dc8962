"""SDP (RFC 4566/8866) with the Microsoft extensions, multipart bodies and offer/answer."""
