"""The API's routers, one module per area; each only translates HTTP to core calls and back."""
