//! Path tokens ([`token`]) and the authorization policies that check them ([`policy`]).

pub mod policy;
pub mod token;
