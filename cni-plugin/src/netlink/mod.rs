//! Netlink plumbing: a synchronous socket ([`socket`]), rtnetlink operations ([`route`]), and
//! opening the container's namespace ([`netns`]).

pub mod netns;
pub mod route;
pub mod socket;
