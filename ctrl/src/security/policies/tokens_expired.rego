# vwire default server policy: no token on the left side of the path has expired.
#
# Input: path_input (ctrl/src/security/policy.rs). Every token's signed `exp` claim (unix
# seconds) must be in the future; the unsigned `expires` field of a segment is not trusted.
# A token that does not decode, or has no numeric exp, counts as expired.
# time.now_ns() is provided by vwire (an engine extension), not by regorus's time builtins.
package nsm

default valid = false

valid {
	count(input.path_segments) > 0
	not expired
}

expired {
	token := input.path_segments[_].token
	not live(token)
}

live(token) {
	[_, claims, _] := io.jwt.decode(token)
	is_number(claims.exp)
	claims.exp * 1000000000 > time.now_ns()
}
