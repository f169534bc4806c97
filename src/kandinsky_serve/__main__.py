from kandinsky_serve.cli import main

main()
