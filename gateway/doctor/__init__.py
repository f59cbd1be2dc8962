"""`lyncgate doctor`: checks a deployment end to end (DNS, certificate, Lync, STUN/TURN)."""
