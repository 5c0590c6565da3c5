"""Local stand-ins for the outside services, each a real HTTP server on 127.0.0.1.

hub.HubServer — the Hugging Face Hub API, resolve URLs and a separate LFS "CDN".
"""
