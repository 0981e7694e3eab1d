module github.com/hashevict/hashevict

go 1.26
