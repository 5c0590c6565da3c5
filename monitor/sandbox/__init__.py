"""Local stand-ins for the services the monitor talks to, each a real HTTP server on 127.0.0.1.

`monitor demo`, the tests and the benchmarks start them; nothing here is used against the real
services. They live in the package (not under tests/) because `monitor demo` ships with it.

hub.HubServer — the Hugging Face Hub API, resolve URLs and a separate LFS "CDN".
github.GitHubServer — the GitHub REST API for releases and their asset downloads.
"""
