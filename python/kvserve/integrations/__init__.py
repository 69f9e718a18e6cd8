"""kvserve inside other serving frameworks, each behind its own optional extra (ray_serve: `kvserve[ray]`)."""
