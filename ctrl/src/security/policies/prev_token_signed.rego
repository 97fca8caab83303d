# vwire default server policy: the previous hop's token was signed by the TLS peer.
#
# Input: path_input (ctrl/src/security/policy.rs). input.index is the receiving hop's own segment,
# so path_segments[index - 1] is the caller's segment, whose token the server copied from the
# nsm-client-token metadata. It must verify (ES256) against input.auth_info.certificate, the PEM
# of the TLS peer's leaf certificate; that binds the path to the authenticated connection.
#
# At index 0 there is no previous segment: nobody on the path vouches for the caller, so the
# request is denied. (NSM only authorizes when there is a peer, and a forwarder is never at
# index 0: an nsmgr always precedes it.) An empty or unparseable certificate is denied too.
package nsm

default valid = false

valid {
	input.index > 0
	token := input.path_segments[input.index - 1].token
	io.jwt.verify_es256(token, input.auth_info.certificate)
}
