"""`runner serve`: the HTTP API and web console over the pipeline.

settings.py (API_* settings), auth.py (API keys, rate limit), jobs.py (accepted videos: upload,
split, assembly, finish, rendering), routes.py (the /v1 API), models.py (the registry for
/v1/models), console.py and static/ (the web page), metrics.py (/metrics), app.py (the FastAPI
application and the service behind it), main.py (uvicorn).
"""
