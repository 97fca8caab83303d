# vwire default server policy: the tokens form a chain of custody.
#
# Input: path_input (ctrl/src/security/policy.rs). For every adjacent pair i, i+1 of
# input.path_segments, the audience of token i contains the subject of token i+1: each hop
# handed the request to the hop that signed the next token. A token that does not decode
# breaks the chain.
package nsm

default valid = false

valid {
	count(input.path_segments) > 0
	not broken
}

broken {
	some i
	input.path_segments[i]
	next := input.path_segments[i + 1]
	not linked(input.path_segments[i].token, next.token)
}

linked(token, next_token) {
	[_, claims, _] := io.jwt.decode(token)
	[_, next_claims, _] := io.jwt.decode(next_token)
	audience_has(claims.aud, next_claims.sub)
}

audience_has(aud, sub) {
	is_array(aud)
	aud[_] == sub
}

audience_has(aud, sub) {
	is_string(aud)
	aud == sub
}
