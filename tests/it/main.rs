//! The one integration test binary: the real app on random ports, a fake PagerDuty in-process.

mod admin;
mod alertmanager;
mod architecture;
mod cli;
mod compose;
mod console;
mod crash;
mod delivery;
mod deploy;
mod generic;
mod helpers;
mod hooks;
mod incidents;
mod mappings;
mod newcomer;
mod operate;
mod own_pages;
mod readme;
mod replicas;
mod room;
mod security;
mod sns;
mod test_command;
mod tidy;
