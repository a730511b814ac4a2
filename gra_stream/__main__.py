from gra_stream.cli import main

main()
