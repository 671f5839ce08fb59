pub use autograd;
