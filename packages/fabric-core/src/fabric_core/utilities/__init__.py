"""Small helpers shared by the facade and the implementations."""
