"""Lync/SfB meetings as a participant sees them, sans-I/O: the C3P documents ([MS-CONFBAS],
[MS-CONFPRO], [MS-CONFAV]) the gateway writes to a meeting's focus and reads back, the
conference-info roster and lobby state ([RFC4575] with [MS-CONFBAS] extensions), and the
short-lived memory of Conference ID look-ups. No sockets, no SIP: call control carries the
bodies in SERVICE, INVITE, INFO and NOTIFY."""
