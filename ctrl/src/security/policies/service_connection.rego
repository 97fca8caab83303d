# vwire default MonitorConnections policy: callers may only watch their own connections.
#
# Input: monitor_input (ctrl/src/security/policy.rs). The caller (input.service_spiffe_id) must
# have requested at least one of the connection ids the monitor selector names
# (input.selector_connection_ids); input.spiffe_id_connection_map records, per SPIFFE ID, the
# connection ids it requested. An empty selector is denied.
package nsm

default valid = false

valid {
	input.selector_connection_ids[_] == input.spiffe_id_connection_map[input.service_spiffe_id][_]
}
