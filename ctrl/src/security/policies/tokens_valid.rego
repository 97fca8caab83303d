# vwire default server policy: every token on the left side of the path decodes as a JWT.
#
# Input: path_input (ctrl/src/security/policy.rs): input.path_segments holds path_segments[0..=index].
# Only the JSON shape is checked here; signatures are prev_token_signed's concern.
package nsm

default valid = false

valid {
	count(input.path_segments) > 0
	count({i | input.path_segments[i]; decodes(input.path_segments[i].token)}) == count(input.path_segments)
}

decodes(token) {
	[_, _, _] := io.jwt.decode(token)
}
